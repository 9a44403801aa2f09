"""bpexp: gradient descent and backpropagation, observable and checkable."""

__version__ = "0.1.0"
