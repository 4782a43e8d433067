-- The extension installs into a fresh database and loads its library.
DROP EXTENSION IF EXISTS junction CASCADE;
CREATE EXTENSION junction;
SELECT extversion FROM pg_extension WHERE extname = 'junction';
SHOW junction.batch_size;
-- typos in our GUC prefix are rejected
SET junction.batchsize = 5;
-- Test helper: run a statement, return its SQLSTATE and message (or 'no error').
CREATE FUNCTION public.expect_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
GRANT EXECUTE ON FUNCTION public.expect_error(text) TO PUBLIC;
