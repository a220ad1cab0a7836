"""The run's settings, handed explicitly to ClearML's component and pipeline decorators.

ClearML's decorators take their settings when they are applied, so ``clearml_pipeline.py``
applies them when a run is built (:func:`clearml_pipeline.build_pipeline`), not at import:

* :meth:`RunSettings.component` is ``PipelineDecorator.component`` with this run's caching and
  the repository and commit agents clone (ClearML does not give a step its controller's
  repository: clearml issue #1370);
* each component's keyword defaults and the controller's arguments come from the one definition
  of the parameters (:mod:`steps.params`): ClearML casts a value edited in the web UI to the
  type of the default it recorded (clearml issue #477), so the defaults must be there, typed.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Optional

from steps.models import model_arguments
from steps.params import DEFAULTS, MODEL_KINDS, PYTHON_TYPES, parameter_fields

#: Where a run's controller and steps run.
MODES = ("offline", "local", "remote", "agent")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run runs (never a pipeline parameter: these are not in ``Args``).

    :param mode: ``offline`` (no server), ``local`` (steps as subprocesses), ``remote`` (steps on
        agents) or ``agent`` (an agent runs this controller: a re-run from the web UI, or ``remote``'s).
    :param queue: the steps' queue (``remote``), and the default queue a re-run sends them to.
    :param controller_queue: the controller's queue in ``remote`` mode; ``local`` runs it here.
    :param cache: reuse cached ``load``/``split`` results.
    :param repository: ``(git URL, commit)`` that agents clone for the steps, or ``(None, None)``.
    :param models: the model kinds whose training steps the run defines.
    :param mlflow: also log the run to MLflow (``--mlflow``, :mod:`runtime.tracking`).
    """

    mode: str = "offline"
    queue: str = "default"
    controller_queue: str = "services"
    cache: bool = True
    repository: tuple[Optional[str], Optional[str]] = (None, None)
    models: tuple[str, ...] = MODEL_KINDS
    mlflow: bool = False

    @property
    def controller_on_queue(self) -> bool:
        """Whether an agent is to run the controller (``remote`` without ``--controller-queue local``)."""
        return self.mode == "remote" and self.controller_queue != "local"

    def component(self, function: Callable, *, kind: str = "", cache: bool = False, **spec) -> Callable:
        """``PipelineDecorator.component(**spec)`` applied to ``function`` with this run's settings.

        :param kind: the model kind a training step trains (its keyword defaults are that model's).
        :param cache: whether the step may be cached (and is, unless the run says ``--no-cache``).
        """
        from clearml import PipelineDecorator

        function.__signature__ = typed_signature(function, component_defaults(function, kind))
        url, commit = self.repository
        return PipelineDecorator.component(name=function.__name__, cache=cache and self.cache, repo=url,
                                           repo_commit=commit, working_dir=".", **spec)(function)


def component_defaults(function: Callable, kind: str = "") -> dict[str, Any]:
    """The default of each keyword argument of a component, from the parameters' one definition.

    A training step's arguments are its estimator's keywords (:func:`steps.models.model_arguments`);
    the others are named as the pipeline parameter they receive; any other typed argument defaults
    to the empty value of its type.
    """
    estimator = model_arguments(kind, DEFAULTS) if kind else {}
    defaults = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.annotation is inspect.Parameter.empty or parameter.kind is not parameter.POSITIONAL_OR_KEYWORD:
            continue
        if name in estimator:
            defaults[name] = estimator[name]
        elif hasattr(DEFAULTS, name):
            defaults[name] = getattr(DEFAULTS, name)
        else:  # "", 0 or 0.0
            annotation = parameter.annotation
            defaults[name] = (annotation if isinstance(annotation, type) else PYTHON_TYPES[str(annotation)])()
    return defaults


def typed_signature(function: Callable, defaults: Mapping[str, Any]) -> inspect.Signature:
    """``function``'s signature with ``defaults`` (ClearML reads a function's arguments through it)."""
    signature = inspect.signature(function)
    return signature.replace(parameters=[
        p.replace(default=defaults[p.name]) if p.name in defaults else p for p in signature.parameters.values()])


def pipeline_arguments(function: Callable) -> Callable:
    """Give the controller ``function(**args)`` one typed keyword argument per pipeline parameter.

    ClearML records the controller's arguments as the run's ``Args`` (the web UI's editable
    parameters); they are the fields of :class:`steps.params.PipelineParameters`, with their defaults.
    """
    function.__signature__ = inspect.Signature([
        inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                          annotation=PYTHON_TYPES[f.type])
        for f in parameter_fields()])
    function.__annotations__ = {p.name: p.annotation for p in function.__signature__.parameters.values()}
    return function
