-- Placeholder on branch quotas only: tern refuses gaps, and this branch's
-- migration is 015 (brief L). Drop this file when merging: another
-- branch owns number 014.
SELECT 1;
