"""Inference that respects the design: the deleted fact is the unit, subjects are clusters.

- bootstrap.py: the cluster bootstrap as replicate weights (mean, Spearman, partial Spearman, vectorised);
- estimate.py: `Estimate` (value, CI, p, n of facts and of subjects, null reason) and the estimators;
- correlation.py: Spearman and partial Spearman point estimates (scipy, rank residuals);
- multiple.py: Holm and Benjamini–Hochberg adjustments;
- meta.py: `pool_seeds`, `pool_differences` (random-effects meta-analysis of Fisher-z ρ across seeds).
Nothing here imports the rest of kdel: it works on plain arrays. docs/statistics.md defines every statistic.
"""

from kdel.stats.estimate import Estimate, hubs_minus_rest, mean_estimate, spearman_estimate
from kdel.stats.meta import Pooled, pool_differences, pool_seeds
from kdel.stats.multiple import benjamini_hochberg, holm

__all__ = ["Estimate", "Pooled", "benjamini_hochberg", "holm", "hubs_minus_rest", "mean_estimate", "pool_differences", "pool_seeds",
           "spearman_estimate"]
