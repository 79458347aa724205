"""The journey RPCs of DecisionService: proto <-> domain translation only."""

from __future__ import annotations

from retain.decision.v1 import decision_pb2
from retain_kit.protoconv import from_struct, to_struct, to_timestamp

from retain_decision.domain import journeys as jd
from retain_decision.journeys_service import Journeys, Report, StoredJourney, templates
from retain_decision.server import Context, DecisionServicer
from retain_decision.service import Catalogue, Decisions, Policies


def journey_to_proto(stored: StoredJourney) -> decision_pb2.Journey:
    j = stored.journey
    return decision_pb2.Journey(
        journey_id=j.journey_id, version=j.version, active=j.active, definition=to_struct(jd.to_dict(j)),
        updated_by=stored.updated_by, updated_at=to_timestamp(stored.updated_at),
    )


def report_to_proto(r: Report) -> decision_pb2.JourneyReport:
    return decision_pb2.JourneyReport(
        journey_id=r.journey_id, version=r.version, entered=r.entered, treated=r.treated, holdout=r.holdout,
        converted_treated=r.converted_treated, converted_holdout=r.converted_holdout,
        conversion_treated=r.lift.rate_treated, conversion_holdout=r.lift.rate_holdout, lift=r.lift.lift,
        lift_ci_low=r.lift.low, lift_ci_high=r.lift.high, active=r.active, completed=r.completed, exited=r.exited,
        steps=[
            decision_pb2.JourneyStepReport(
                step_id=s.step_id, kind=s.kind, entered=s.entered, sent=s.sent, withheld=s.withheld,
                converted=s.converted, failed=s.failed,
                suppressed=[decision_pb2.ReasonCount(reason=k, count=v) for k, v in sorted(s.suppressed.items())],
            )
            for s in r.steps
        ],
        transitions=[decision_pb2.JourneyTransition(source=t.source, target=t.target, count=t.count)
                     for t in r.transitions],
    )


class JourneyDecisionServicer(DecisionServicer):
    """DecisionService with the journey definitions and reports."""

    def __init__(self, catalogue: Catalogue, decisions: Decisions, policies: Policies, journeys: Journeys) -> None:
        super().__init__(catalogue, decisions, policies)
        self.journeys = journeys

    async def UpsertJourney(
        self, request: decision_pb2.UpsertJourneyRequest, context: Context
    ) -> decision_pb2.UpsertJourneyResponse:
        stored = await self.journeys.upsert(
            request.workspace_id, from_struct(request.definition) if request.HasField("definition") else {},
            actor=request.actor, template=request.template,
        )
        return decision_pb2.UpsertJourneyResponse(journey=journey_to_proto(stored))

    async def ListJourneys(
        self, request: decision_pb2.ListJourneysRequest, context: Context
    ) -> decision_pb2.ListJourneysResponse:
        found = await self.journeys.list(request.workspace_id)
        return decision_pb2.ListJourneysResponse(journeys=[journey_to_proto(s) for s in found])

    async def GetJourney(
        self, request: decision_pb2.GetJourneyRequest, context: Context
    ) -> decision_pb2.GetJourneyResponse:
        stored = await self.journeys.get(request.workspace_id, request.journey_id, version=request.version)
        return decision_pb2.GetJourneyResponse(journey=journey_to_proto(stored))

    async def GetJourneyReport(
        self, request: decision_pb2.GetJourneyReportRequest, context: Context
    ) -> decision_pb2.GetJourneyReportResponse:
        report = await self.journeys.report(request.workspace_id, request.journey_id)
        return decision_pb2.GetJourneyReportResponse(report=report_to_proto(report))

    async def ListJourneyTemplates(
        self, request: decision_pb2.ListJourneyTemplatesRequest, context: Context
    ) -> decision_pb2.ListJourneyTemplatesResponse:
        return decision_pb2.ListJourneyTemplatesResponse(
            templates=[
                decision_pb2.JourneyTemplate(name=t.name, title=t.title, description=t.description,
                                             definition=to_struct(dict(t.definition)))
                for t in templates()
            ]
        )
