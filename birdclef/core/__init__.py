"""The torch-free bottom of the project: errors, the 5-s row grid, the metric, activations, I/O.

Every other package may import `birdclef.core`; it imports nothing else of the project and
needs only numpy and pandas (scipy for the metric), so a submission bundle copies it whole.
"""
