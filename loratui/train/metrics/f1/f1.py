# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""F1: the harmonic mean of precision and recall (scikit-learn ``f1_score``).

An ``evaluate`` metric module with the same inputs and output as the hub's ``f1`` metric, shipped with loratui so
that it loads without network access.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = """
The F1 score is the harmonic mean of precision and recall: F1 = 2 * precision * recall / (precision + recall).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): true labels.
    labels (`list` of `int`, optional): the labels to include when `average` is not "binary", and their order when
        `average` is None. Default: every label seen in predictions and references, sorted.
    pos_label (`int`, default 1): the positive class when `average` is "binary".
    average (`str` or None, default "binary"): "binary" (the positive class only), "micro" (global counts),
        "macro" (unweighted mean over labels), "weighted" (mean weighted by support), "samples" (multilabel),
        or None (one score per label).
    sample_weight (`list` of `float`, optional): a weight for each example.

Returns:
    f1 (`float`, or an array of floats when `average` is None): between 0 and 1; higher is better.

Example:
    >>> metric = evaluate.load("loratui/metrics/f1/f1.py")
    >>> metric.compute(references=[0, 1, 0, 1, 0], predictions=[0, 0, 1, 1, 0])
    {'f1': 0.5}
    >>> metric.compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 2, 1, 0, 0, 1], average="macro")["f1"]
    0.26666666666666666
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


def _features(config_name):
    if config_name == "multilabel":
        return datasets.Features(
            {"predictions": datasets.Sequence(datasets.Value("int32")),
             "references": datasets.Sequence(datasets.Value("int32"))}
        )
    return datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_features(self.config_name),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        score = f1_score(
            references, predictions, labels=labels, pos_label=pos_label, average=average, sample_weight=sample_weight
        )
        score = np.asarray(score)  # recent scikit-learn returns a Python float for a single score
        return {"f1": float(score) if score.size == 1 else score}
