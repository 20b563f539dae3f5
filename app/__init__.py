"""The modelhouse HTTP service. Imports `models`, never `training`."""
