"""superstill: reverse distillation ("superstilling") of a larger student from a smaller teacher."""

__version__ = "0.1.0"
