"""pyroseq: probabilistic sequence models in Pyro.

Deep state-space models whose state moves by a conditional normalising flow of white noise
(Schmidt & Hofmann, NeurIPS 2018), trained by variational inference, and the teacher-forced
baselines they are compared with.
"""

__version__ = "0.1.0"
