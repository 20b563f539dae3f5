"""Offline trainers (`python -m training.<name>`) and their engine. Imports `models`, never `app`."""
