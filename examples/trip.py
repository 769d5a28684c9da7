# examples/trip.py  (run: BATON_AGENT_MODULES=examples.trip_agents python examples/trip.py)
from orchestration import WorkflowOrchestrator

trip = {
    "name": "trip",
    "max_handoffs": 5,
    "steps": [
        {
            "agent_id": "booking",
            "task_type": "reserve_seat",
            "output_key": "seat",
            "parameters": {"flight": "BA117"},
            "retries": 3,
            "retry_backoff": 2,
            "timeout": 30,
        },
        {
            "agent_id": "payments",
            "task_type": "charge",
            "output_key": "payment",
            "context_keys": ["seat"],
        },  # only `seat` is loaded for it
        {
            "agent_id": "booking",
            "task_type": "confirm",
            "output_key": "confirmation",
            "parameters": {"flight": "BA117"},
        },
    ],
}

orchestrator = WorkflowOrchestrator()  # BATON_REDIS_URL, else embedded Redis + local workers
wid = orchestrator.run_workflow(trip, workflow_id="trip-4711")  # same id again: same workflow
ctx = orchestrator.wait(wid, timeout=120)
if ctx.status == "failed":  # e.g. the charge failed after its retries
    print(ctx.compensation)  # compensated=['step_1'], failures={}, restored_to_version=0
    orchestrator.retry_workflow(wid)  # from the last good checkpoint: what the saga undid reruns
print(ctx.status, ctx.shared_data["payment"])
orchestrator.close()
