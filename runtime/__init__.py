"""ClearML's runtime beside the pipeline: everything ``clearml_pipeline.py`` needs from ClearML besides its steps.

=====================  =====================================================================
module                 what it is
=====================  =====================================================================
``components``         the run's settings handed to ClearML's component and pipeline decorators
``controller``         what the controller does before its first step (Args checked, repository, queue)
``offline``            the offline session (``--mode offline``)
``server``             fail fast on a missing or lost server (the SDK retries in silence)
``step_watch``         steps aborted, failed, lost or waiting for an agent; stopping a run's steps
``guard``              runs the pipeline: results, or a failure in one line recorded on the server
``interrupts``         Ctrl-C and SIGTERM
``outcome``            the outcome text one part writes and another reads (failure reasons, sessions)
``session_import``     ``import-offline``
``step_code``          ``step-code``
``reporting``          what the steps report (scalars, plots, tables)
``model_registry``     the models on ClearML's Models page (named by run, framework, scores, data)
``session_disk``       a full ClearML cache disk: refused before, caught during an offline run
``tracking``           ``--mlflow``: the run logged to MLflow by the controller
``data_versions``      ClearML Data: ``register-data`` and ``--dataset-id``
``optimize``           ``optimize``: HyperParameterOptimizer over the pipeline's ``Args`` (space, base run, stop)
``optimize_session``   one ``optimize`` search: checks, the optimizer's task, trials followed, Ctrl-C
``optimize_report``    ``optimize``'s lines: one per trial, the best trials, the command of the best
``optimize_stop``      Ctrl-C during ``optimize``: its trials and their steps stopped on the server
``sdk``                the only uses of ClearML's private internals, version-checked
``errors``             :class:`SetupError`
=====================  =====================================================================

ClearML is imported inside functions only: importing any of these modules defines things and nothing else.
"""
