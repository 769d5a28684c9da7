"""The definition room: a workflow definition (a dict, YAML or JSON) read, checked against
the agents' catalog and compiled into a :class:`~orchestration.definition.plan.Plan`.
Nothing here reaches Redis or Celery."""
