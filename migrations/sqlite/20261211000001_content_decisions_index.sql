-- The stage log's time index served only the weekly report, which reads the operator's decisions
-- (approvals held, approved, rejected or expired; reviews that blocked) within its week. Every
-- item wrote an entry in it for each of its stages, about six a reply. This index holds the
-- decisions alone, so the reply path writes none; the report names it in its query. The
-- condition is written as the report's query writes it: SQLite uses a partial index only for a
-- query whose WHERE clause contains the index's condition as one of its terms. The outcomes are
-- compared one by one, not with IN: SQLite evaluates the condition for every row inserted, and
-- an IN list built a temporary table each time.
DROP INDEX content_events_at;
CREATE INDEX content_events_decisions ON content_events (at)
    WHERE (stage = 'approve'
           AND (outcome = 'held' OR outcome = 'approved' OR outcome = 'rejected' OR outcome = 'expired'))
       OR (stage = 'review' AND outcome = 'blocked');
