"""What every part of marsedge shares: the class table and the model metadata schema.

Imports only the standard library and numpy, so the edge runtime may use it.
"""
