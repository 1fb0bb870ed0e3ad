"""vfeval-example: a third-party plugin for vfeval, installed and discovered like any other.

It registers the ``motion`` encoder, the ``csv-mc`` task and the ``csv-mc-template`` command; see
``vfeval_example.plugin``.
"""

__version__ = "0.1.0"
