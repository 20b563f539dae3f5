"""Dataset readers for the trainers."""
