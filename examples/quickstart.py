# examples/quickstart.py
from orchestration import WorkflowOrchestrator

pipeline = {
    "name": "Data Analysis Pipeline",
    "description": "Extract, clean, analyze, and report on business data",
    "steps": [
        {
            "agent_id": "data_processor",
            "task_type": "extract_data",
            "output_key": "extracted_records",
            "parameters": {"source": "business_db"},
        },
        {
            "agent_id": "data_processor",
            "task_type": "clean_data",
            "output_key": "cleaned_records",
            "parameters": {"validation_rules": ["remove_duplicates", "check_nulls"]},
        },
        {
            "agent_id": "analyzer",
            "task_type": "statistical_analysis",
            "output_key": "analysis_results",
            "parameters": {"analysis_type": "comprehensive"},
        },
        {
            "agent_id": "analyzer",
            "task_type": "trend_analysis",
            "output_key": "trend_results",
            "parameters": {"period": "quarterly"},
        },
        {
            "agent_id": "reporter",
            "task_type": "generate_report",
            "output_key": "final_report",
            "parameters": {"format": "executive_summary"},
        },
    ],
}

orchestrator = WorkflowOrchestrator()  # BATON_REDIS_URL, else embedded Redis + local workers
workflow_id = orchestrator.run_workflow(pipeline)
context = orchestrator.wait(workflow_id, timeout=120)
print(context.status, context.shared_data["final_report"]["report_path"])
orchestrator.close()  # stops what it started
