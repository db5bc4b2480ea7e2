"""Keypoint format tables (one YAML file per format); a package so the tables ship as package data."""
