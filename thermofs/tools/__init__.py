"""Admin commands: stats (fsck, compact, cool and train come with their issues)."""
