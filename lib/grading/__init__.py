"""Checks shared by the graded exercises' test cells and by ``tests/``: one reference backs both.

Every ``check_*`` function takes the student's class or function and the case to try (shapes, strides,
seeds, configurations), computes the expected answer with independent reference code (``torch.nn.functional``,
torchvision, ``lib.analysis`` or the published numbers) and raises :class:`GradingError` with a message
that says what was expected, what was found and where to look::

    stage 3 output is 16x16, expected 8x8: check the shortcut stride

The visible tests in a notebook call these checks on one case; the hidden tests call the same checks on
others, so an answer that only fits the visible case fails there.

==========================  =====================================================================
``lib.grading.base``        the error, quiet execution, building the student's object, comparisons
``lib.grading.pooling``     assignment ``mixed_pooling``
``lib.grading.receptive_field``  assignment ``receptive_field``
``lib.grading.resnet_variants``  assignment ``resnet_variants``
``lib.grading.safety``      the grader's own safety: ``assert_untampered`` and the source scan
==========================  =====================================================================
"""
from __future__ import annotations

from lib.grading.base import GradingError
from lib.grading.pooling import (check_lp_pool, check_mixed_pool_fixed, check_mixed_pool_learnable,
                                 check_pooling_comparison, check_stochastic_pool, lp_pool_reference,
                                 mixed_pool_reference, stochastic_pool_expectation)
from lib.grading.receptive_field import (MEASURED_FIELDS, PUBLISHED_FIELDS, branching_model, chain_field_reference,
                                         check_rf_chain, check_rf_graph, check_rf_published, check_rf_stages,
                                         model_stages, published_feature_extractor, random_chain)
from lib.grading.resnet_variants import (TWINS, WRN_PARAMS_M, check_bottleneck_twin, check_preact_block,
                                         check_torchvision_twin, check_variant_comparison, check_wide_resnet,
                                         preact_params, wrn_params)
from lib.grading.safety import Finding, assert_untampered, imported_names, scan_source

__all__ = [
    "GradingError",
    "mixed_pool_reference", "stochastic_pool_expectation", "lp_pool_reference", "check_mixed_pool_fixed",
    "check_mixed_pool_learnable", "check_stochastic_pool", "check_lp_pool", "check_pooling_comparison",
    "PUBLISHED_FIELDS", "MEASURED_FIELDS", "chain_field_reference", "random_chain", "branching_model",
    "model_stages", "published_feature_extractor", "check_rf_chain", "check_rf_graph", "check_rf_published",
    "check_rf_stages",
    "WRN_PARAMS_M", "TWINS", "preact_params", "wrn_params", "check_preact_block", "check_wide_resnet",
    "check_bottleneck_twin", "check_torchvision_twin", "check_variant_comparison",
    "assert_untampered", "scan_source", "imported_names", "Finding",
]
