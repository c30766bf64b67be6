"""What the hidden tests run inside the kernel, one module per assignment (imported by the cells themselves):

==================================  ===============================================================
``grader.checks.base``              the error, quiet execution, building the student's object, comparisons,
                                    reported rows trained again
``grader.checks.integrity``         the tamper check, references only the grader may call, own-work checks
``grader.checks.pooling``           assignment ``mixed_pooling``
``grader.checks.receptive_field``   assignment ``receptive_field``
``grader.checks.resnet_variants``   assignment ``resnet_variants``
==================================  ===============================================================

Every ``check_*`` function takes the student's class or function and the case to try (shapes, strides,
seeds, configurations), computes the expected answer with independent reference code (``torch.nn.functional``,
torchvision, the grader's analytic references or published numbers) and raises ``GradingError`` with a
message that says what was expected, what was found and where to look::

    stage 3 output is 16x16, expected 8x8: check the shortcut stride

A notebook's visible tests check with what a student can see (values written in the cell, invariants, the
course's public tools); the hidden tests call these checks on other cases. None of this is in ``lib``, and the
student release leaves it out.
"""
