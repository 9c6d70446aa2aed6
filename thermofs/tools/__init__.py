"""Admin commands: stats, fsck, compact; admin.py runs cool, compact and train offline or through a
mounted volume's daemon."""
