-- LLM spend: the cost of each call (from the configured price table) and a time index for the
-- daily budget sums.
ALTER TABLE llm_usage ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
CREATE INDEX llm_usage_day ON llm_usage (created_at);
