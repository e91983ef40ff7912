"""Emits events with Prefect's own client, as an application would: `emit_event`, to the
server named by PREFECT_API_URL, with PREFECT_API_AUTH_STRING if set. Waits until Prefect's
events worker has sent (or given up on) every event, then prints the ids it emitted, one per
line. Used by tests/prefect_client.rs."""

import sys

import prefect
from prefect.events import emit_event
from prefect.events.worker import EventsWorker


def main() -> None:
    count, tag = int(sys.argv[1]), sys.argv[2]
    print(f"prefect {prefect.__version__}", file=sys.stderr)
    ids = []
    for i in range(count):
        event = emit_event(
            event="prefect.client.test",
            resource={"prefect.resource.id": f"{tag}.{i}"},
            payload={"i": i},
        )
        if event is None:
            sys.exit("emit_event did not emit: is PREFECT_API_URL set?")
        ids.append(str(event.id))
    EventsWorker.drain_all(timeout=120)
    for event_id in ids:
        print(event_id)


if __name__ == "__main__":
    main()
