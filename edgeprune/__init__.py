"""edgeprune: a trained PyTorch model plus a device's budgets in, a measured mobile model out.

Importing this package loads no runtime SDK; each stage imports what it needs when it runs.
"""

__version__ = "0.1.0"
