-- Lifecycle scans must cost what is due, not how many certificates exist.
-- Automatic renewal asks "was this certificate already renewed?" once per
-- certificate in its window: answer it from an index.
CREATE INDEX IF NOT EXISTS requests_predecessor ON requests (predecessor_serial);
