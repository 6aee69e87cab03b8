"""Floor 0: stateless, nogil kernels over typed memoryviews (float32 and float64).

They never allocate, never validate (the Python floor above does) and hold no state.
"""
