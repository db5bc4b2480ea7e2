"""The SMPL-X pose dataset built from real motion capture: building, splitting, loading."""
