"""The hot/cold policy: chunk temperatures and their rules (temperature.py), access tracking
(tracker.py), the background cooler (cooler.py), and training on the volume's data (training.py)."""
