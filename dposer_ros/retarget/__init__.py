"""Retargeting motion capture onto SMPL-X: source skeletons, sequence fits, whole takes."""
