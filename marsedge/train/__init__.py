"""Training: data loading and cleaning, augmentation, the U-Net, losses and the loop.

Importing this package is cheap; TensorFlow is imported only by the modules that need
it (through :mod:`marsedge.train.tf_env`).
"""
