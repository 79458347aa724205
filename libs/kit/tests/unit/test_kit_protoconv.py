import random
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from retain_kit.protoconv import from_timestamp, to_timestamp


def test_timestamps_convert_exactly_as_protobuf_does() -> None:
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-9, minutes=-30)), None]
    for _ in range(5000):
        offset = timedelta(seconds=rng.randrange(0, 7_000_000_000), microseconds=rng.randrange(1_000_000))
        moment = datetime(1900, 1, 1) + offset
        zone = rng.choice(zones)
        value = moment.replace(tzinfo=zone) if zone else moment
        expected = Timestamp()
        expected.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
        got = to_timestamp(value)
        assert got is not None and (got.seconds, got.nanos) == (expected.seconds, expected.nanos), value
        if (got.seconds, got.nanos) != (0, 0):
            back = from_timestamp(got)
            assert back == expected.ToDatetime(tzinfo=UTC) == value.replace(tzinfo=value.tzinfo or UTC)
            assert back is not None and back.tzinfo is not None


def test_nanoseconds_truncate_and_unset_reads_as_none() -> None:
    assert from_timestamp(Timestamp(seconds=1, nanos=1_999)) == datetime(1970, 1, 1, 0, 0, 1, 1, tzinfo=UTC)
    assert from_timestamp(Timestamp()) is None and from_timestamp(None) is None and to_timestamp(None) is None
