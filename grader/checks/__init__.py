"""The judges of the hidden tests, one module per assignment, run in the grader's process (``grader.judge``):

==================================  ===============================================================
``grader.checks.base``              reading a reported tensor back, comparisons, results rows
``grader.checks.pooling``           assignment ``mixed_pooling``
``grader.checks.receptive_field``   assignment ``receptive_field``
``grader.checks.resnet_variants``   assignment ``resnet_variants``
``grader.checks.conv_backward``     assignment ``conv_backward``
``grader.checks.vit_attention``     assignment ``vit_attention``
``grader.checks.transfer_finetune`` assignment ``transfer_finetune``
==================================  ===============================================================

Each module's ``CELLS`` maps a test cell to its hidden cases (drawn at grading time from the run's seed) and
its judge: for each case, the expected answer computed with independent reference code
(``torch.nn.functional``, torchvision, the grader's analytic references or published numbers), and a named
check that passes or says what was expected, what was found and where to look::

    stage 3 output is [1, 64, 16, 16], expected [1, 64, 8, 8]: ... halve the resolution in their first block

A notebook's visible tests check with what a student can see; the hidden part of a test cell runs the
student's code on the hidden cases and reports what it returned (``lib.report``). None of this module is in
``lib`` or inside the sandbox, and the student release leaves it out.
"""
