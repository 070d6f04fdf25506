"""recvos.evaluation: DAVIS J and F measures, the semi-supervised and unsupervised protocols, reports.

Submodules (import them directly; importing this package loads nothing else):

- :mod:`recvos.evaluation.metrics`: ``jaccard``, ``f_measure``, ``jaccard_and_f``, ``summarize``,
  ``seg2bmap``, ``bound_radius`` (numerically identical to the official DAVIS toolkit).
- :mod:`recvos.evaluation.scoring`: the protocols on one sequence (``score_sequence``, ``TASKS``).
- :mod:`recvos.evaluation.results`: ``ObjectScores``, ``EvalResult``, ``METRIC_KEYS``.
- :mod:`recvos.evaluation.folders`: ground truth and predictions on disk (``find_ground_truth``,
  ``SequenceSpec``).
- :mod:`recvos.evaluation.parallel`: the worker pool (``parallel_map``, ``default_workers``).
- :mod:`recvos.evaluation.protocols`: ``evaluate_sequences``, ``evaluate_semi_supervised``,
  ``evaluate_unsupervised``, ``evaluate_arrays``.
- :mod:`recvos.evaluation.report`: text tables, CSV/JSON, plots (``write_outputs``).
"""
