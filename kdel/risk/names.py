"""The risk features' names and order, and their version: what a fitted risk model is tied to.

Kept free of heavy imports, so a risk model file can be loaded and used with numpy alone. The definitions of
the features are in kdel.risk.features; changing any of them, or this list, means a new FEATURE_VERSION.
"""

FEATURE_VERSION = 1
KNOWN_METHODS = ("rome", "r-rome", "memit", "alphaedit", "ft", "ga", "npo", "rmu", "simnpo")
RANK_ONE = ("rome", "r-rome")  # κ is the exact transfer of their update

# Case-level features (equal for every probe of a case); also the inputs of the efficacy head.
CASE_FEATURES = (
    "layer_frac", "site_last", "rank_one", *(f"method_{m}" for m in KNOWN_METHODS),
    "tracing_effect", "target_logp", "target_margin", "target_log_subject_degree", "target_log_object_degree",
    "target_object_density", "fo_norm_ratio", "kappa_self_mean", "kappa_self_min",
)
# Probe-level features, then the case-level ones: the inputs of the flip and p-drop heads.
PROBE_FEATURES = (
    "kappa_site", "kappa_subject", "kappa_last", "kappa_absmax", "fo_dlogp", "fo_margin_after",
    "grad_cos", "key_cos", "rel_sim_key", "rel_sim_value", "object_density", "object_sim",
    "shared_subject", "shared_object", "shared_relation", "subject_is_target_object", "object_is_target_subject",
    "hop1", "hop2", "log_subject_degree", "log_object_degree", "margin", "logp",
)
FEATURES = PROBE_FEATURES + CASE_FEATURES
