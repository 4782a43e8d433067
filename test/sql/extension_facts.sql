-- test/sql/extension_facts.sql — every fact about extension junction's member objects, one
-- line each, as "<object> | <fact>", sorted: two databases have the same extension schema
-- exactly when their outputs are equal (test/fault_upgrade.sh diffs an upgraded install
-- against a fresh one).  pg_dump leaves extension members out, so this reads the catalogs.
-- Nothing here prints an oid or anything else that differs between two equal installs.
\pset format unaligned
\pset tuples_only on
\pset pager off
WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'junction'),
m AS (  -- the members, named as pg_describe_object names them
    SELECT d.classid, d.objid, d.objsubid, pg_describe_object(d.classid, d.objid, d.objsubid) AS obj
    FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rel AS (SELECT m.obj, c.* FROM m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid),
facts(obj, fact) AS (
    -- membership itself
    SELECT obj, 'member' FROM m
    -- extension-level facts: version is not compared (that is the point), config dumps are
    UNION ALL
    SELECT 'extension junction', 'config ' || c::regclass::text || ' ' || coalesce(ext.extcondition[i], '?')
    FROM ext, unnest(ext.extconfig) WITH ORDINALITY AS u(c, i)
    -- comments on members (and on their columns)
    UNION ALL
    SELECT m.obj || coalesce(' column ' || a.attname, ''), 'comment ' || quote_literal(ds.description)
    FROM m JOIN pg_description ds ON ds.classoid = m.classid AND ds.objoid = m.objid
    LEFT JOIN pg_attribute a ON m.classid = 'pg_class'::regclass AND a.attrelid = m.objid AND a.attnum = ds.objsubid AND ds.objsubid > 0
    -- the privileges pg_dump will take as the extension's own (pg_init_privs)
    UNION ALL
    SELECT m.obj || coalesce(' column ' || a.attname, ''), 'init_privs ' || ip.privtype::text || ' ' || ip.initprivs::text
    FROM m JOIN pg_init_privs ip ON ip.classoid = m.classid AND ip.objoid = m.objid
    LEFT JOIN pg_attribute a ON m.classid = 'pg_class'::regclass AND a.attrelid = m.objid AND a.attnum = ip.objsubid AND ip.objsubid > 0
    -- functions: the whole definition (language, volatility, strictness, security, parallel,
    -- cost, rows, SET clauses, body), line by line, and the privileges
    UNION ALL
    SELECT m.obj, 'def ' || lpad(l.n::text, 4, '0') || ' ' || l.line
    FROM m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid,
         LATERAL regexp_split_to_table(pg_get_functiondef(p.oid), E'\n') WITH ORDINALITY AS l(line, n)
    WHERE p.prokind IN ('f', 'p', 'w')
    UNION ALL
    SELECT m.obj, format('proc kind=%s strict=%s volatile=%s secdef=%s parallel=%s leakproof=%s config=%s acl=%s owner=%s',
                         p.prokind, p.proisstrict, p.provolatile, p.prosecdef, p.proparallel, p.proleakproof,
                         p.proconfig, p.proacl, pg_get_userbyid(p.proowner))
    FROM m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    -- relations (tables, views, sequences, composite types)
    UNION ALL
    SELECT obj, format('relation kind=%s persistence=%s options=%s acl=%s owner=%s rls=%s/%s',
                       relkind, relpersistence, reloptions, relacl, pg_get_userbyid(relowner),
                       relrowsecurity, relforcerowsecurity)
    FROM rel
    UNION ALL
    SELECT rel.obj, format('column %s %s %s notnull=%s default=%s identity=%s generated=%s collation=%s acl=%s',
                           lpad(a.attnum::text, 3, '0'), a.attname, format_type(a.atttypid, a.atttypmod),
                           a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
                           CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END, a.attacl)
    FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT rel.obj, format('constraint %s %s validated=%s deferrable=%s/%s', co.conname, pg_get_constraintdef(co.oid),
                           co.convalidated, co.condeferrable, co.condeferred)
    FROM rel JOIN pg_constraint co ON co.conrelid = rel.oid
    UNION ALL
    SELECT rel.obj, 'index ' || pg_get_indexdef(i.indexrelid) || coalesce(' comment ' || quote_literal(obj_description(i.indexrelid, 'pg_class')), '')
    FROM rel JOIN pg_index i ON i.indrelid = rel.oid
    UNION ALL
    SELECT rel.obj, 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM rel JOIN pg_trigger t ON t.tgrelid = rel.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT rel.obj, 'policy ' || po.polname || ' ' || po.polcmd::text || ' ' || coalesce(pg_get_expr(po.polqual, po.polrelid), '') || ' ' || coalesce(pg_get_expr(po.polwithcheck, po.polrelid), '')
    FROM rel JOIN pg_policy po ON po.polrelid = rel.oid
    UNION ALL
    SELECT rel.obj, 'view ' || lpad(l.n::text, 4, '0') || ' ' || l.line
    FROM rel, LATERAL regexp_split_to_table(pg_get_viewdef(rel.oid), E'\n') WITH ORDINALITY AS l(line, n)
    WHERE rel.relkind IN ('v', 'm')
    UNION ALL
    SELECT rel.obj, format('sequence %s start=%s inc=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                           format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                           (SELECT d.refobjid::regclass::text || '.' || d.refobjsubid FROM pg_depend d
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = rel.oid AND d.refclassid = 'pg_class'::regclass
                               AND d.deptype IN ('a', 'i')))
    FROM rel JOIN pg_sequence s ON s.seqrelid = rel.oid
    -- types: enums, domains (composite types are relations above)
    UNION ALL
    SELECT m.obj, format('type %s typtype=%s acl=%s owner=%s', format_type(t.oid, NULL), t.typtype, t.typacl, pg_get_userbyid(t.typowner))
    FROM m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
    UNION ALL
    SELECT m.obj, 'enum ' || e.enumsortorder || ' ' || e.enumlabel
    FROM m JOIN pg_enum e ON m.classid = 'pg_type'::regclass AND e.enumtypid = m.objid
    UNION ALL
    SELECT m.obj, 'domain constraint ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
    FROM m JOIN pg_constraint co ON m.classid = 'pg_type'::regclass AND co.contypid = m.objid
    -- schemas
    UNION ALL
    SELECT m.obj, format('schema acl=%s owner=%s', n.nspacl, pg_get_userbyid(n.nspowner))
    FROM m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
    -- the roles the install script creates (not members, but part of what an install leaves)
    UNION ALL
    SELECT 'role ' || rolname, format('role super=%s login=%s inherit=%s', rolsuper, rolcanlogin, rolinherit)
    FROM pg_roles WHERE rolname LIKE 'junction\_%'
)
SELECT obj || ' | ' || fact FROM facts ORDER BY obj COLLATE "C", fact COLLATE "C";
