-- A persona's latest posts (recall) were found by walking every memory of the persona newest
-- first until enough posts turned up: O(memories) a reply once mentions and replies pile up.
CREATE INDEX memories_persona_kind ON memories (persona, kind, id);
-- The agents with mentions still to answer (read at start) without scanning every answered one.
CREATE INDEX inbound_events_waiting ON inbound_events (persona, platform, id) WHERE state = 'pending';
