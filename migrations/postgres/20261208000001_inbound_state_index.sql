-- Every query that filters inbound events by state asks for the pending ones, and the partial
-- index inbound_events_waiting serves those. The full (persona, platform, state, id) index only
-- cost writes: each mention stored inserted an entry, and each answered or closed mention moved
-- its entry within the index (a delete and an insert), in the reply's own transaction.
DROP INDEX inbound_events_pending;
