-- The stage log's time index served only the weekly report, which reads the operator's decisions
-- (approvals held, approved, rejected or expired; reviews that blocked) within its week. Every
-- item wrote an entry in it for each of its stages, about six a reply. This index holds the
-- decisions alone, so the reply path writes none.
DROP INDEX content_events_at;
CREATE INDEX content_events_decisions ON content_events (at)
    WHERE (stage = 'approve'
           AND (outcome = 'held' OR outcome = 'approved' OR outcome = 'rejected' OR outcome = 'expired'))
       OR (stage = 'review' AND outcome = 'blocked');
