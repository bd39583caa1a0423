-- Placeholder on the expiry branch only: migrations must be contiguous, and
-- 012 belongs to another branch (retention policies). Drop this file when
-- merging that branch's 012; 013_expiry_authorisation.sql follows it.
SELECT 1;
