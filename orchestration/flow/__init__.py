"""The flow room: what each state change sends. Broker configuration (``broker``), the
next messages of a plan (``compiler``), messages as kombu stores them (``wire``), the
outbox that hands them to a script (``outbox``), and sending a workflow on
(``dispatch``, ``resume``)."""
