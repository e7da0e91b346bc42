"""Tiny procedural captioned data for training and scoring small diffusion models on CPU: shapes and score."""
