-- The tutorial design's one table: a result row per request.
CREATE TABLE IF NOT EXISTS tutorial_results (
    id uuid PRIMARY KEY,
    status text NOT NULL,
    output text
);
