"""What training and serving share: networks, preprocessing presets and the model registry.

Pure torch/PIL/numpy: nothing in here may import a web framework or the trainers.
"""
