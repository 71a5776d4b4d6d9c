SELECT
  e.k_operation AS "api.operation",
  e.k_user AS "user",
  e.k_account AS "actor.user.account.uid",
  e.k_user_agent AS "user_agent",
  e.k_src_ip AS "src_ip",
  e.k_src_domain AS "src_endpoint.domain",
  e.k_region AS "region",
  count(*) AS "count",
  min(e.t) AS "firstTime",
  max(e.t) AS "lastTime",
  sum(CASE WHEN lower(e.status) = 'success' THEN 1 ELSE 0 END) AS "succeeded",
  sum(CASE WHEN lower(e.status) = 'failure' THEN 1 ELSE 0 END) AS "failed",
  json_format(CAST(slice(array_agg(DISTINCT e.repository ORDER BY e.repository) FILTER (WHERE e.repository IS NOT NULL), 1, 51) AS JSON)) AS "repositories",
  json_format(CAST(slice(array_agg(DISTINCT e.image_tag ORDER BY e.image_tag) FILTER (WHERE e.image_tag IS NOT NULL), 1, 51) AS JSON)) AS "image_tags",
  json_format(CAST(slice(array_agg(DISTINCT e.session_issuer ORDER BY e.session_issuer) FILTER (WHERE e.session_issuer IS NOT NULL), 1, 51) AS JSON)) AS "session_issuers",
  json_format(CAST(slice(array_agg(DISTINCT e.principal_id ORDER BY e.principal_id) FILTER (WHERE e.principal_id IS NOT NULL), 1, 51) AS JSON)) AS "principal_ids",
  json_format(CAST(slice(array_agg(DISTINCT e.invoked_by ORDER BY e.invoked_by) FILTER (WHERE e.invoked_by IS NOT NULL), 1, 51) AS JSON)) AS "invoked_by",
  json_format(CAST(slice(array_agg(DISTINCT e.repository ORDER BY e.repository) FILTER (WHERE e.repository IS NOT NULL AND lower(e.status) = 'success'), 1, 51) AS JSON)) AS "succeeded_repositories",
  json_format(CAST(slice(array_agg(DISTINCT e.image_tag ORDER BY e.image_tag) FILTER (WHERE e.image_tag IS NOT NULL AND lower(e.status) = 'success'), 1, 51) AS JSON)) AS "succeeded_image_tags",
  json_format(CAST(slice(array_agg(DISTINCT e.image_digest ORDER BY e.image_digest) FILTER (WHERE e.image_digest IS NOT NULL), 1, 51) AS JSON)) AS "image_digests",
  json_format(CAST(slice(array_agg(DISTINCT e.image_digest ORDER BY e.image_digest) FILTER (WHERE e.image_digest IS NOT NULL AND lower(e.status) = 'success'), 1, 51) AS JSON)) AS "succeeded_image_digests"
FROM (
  SELECT
    "api"."operation" AS k_operation,
    "actor"."user"."uid" AS k_user,
    "actor"."user"."account"."uid" AS k_account,
    "http_request"."user_agent" AS k_user_agent,
    "src_endpoint"."ip" AS k_src_ip,
    "src_endpoint"."domain" AS k_src_domain,
    "cloud"."region" AS k_region,
    CASE WHEN "actor"."user"."uid" IS NULL THEN "actor"."user"."uid_alt" END AS k_anon,
    "time" AS t,
    "status" AS status,
    json_extract_scalar("api"."request"."data", '$.repositoryName') AS repository,
    json_extract_scalar("api"."request"."data", '$.imageTag') AS image_tag,
    json_extract_scalar("api"."response"."data", '$.image.imageId.imageDigest') AS image_digest,
    "actor"."session"."issuer" AS session_issuer,
    "actor"."user"."uid_alt" AS principal_id,
    "actor"."invoked_by" AS invoked_by
  FROM "amazon_security_lake_glue_db_us_east_1"."amazon_security_lake_table_us_east_1_cloud_trail_mgmt_2_0"
  WHERE "time_dt" >= TIMESTAMP '2026-11-01 00:00:00.000000'
    AND "time_dt" < TIMESTAMP '2026-11-21 00:00:00.000000'
    AND "accountid" IN ('111122223333')
    AND "time" >= 1793491200000
    AND "time" < 1795219200000
    AND "api"."operation" = 'PutImage'
    AND NOT (coalesce("actor"."user"."uid" IN ('arn:aws:iam::111122223333:role/ci-deployer', 'ecr.amazonaws.com'), false)
      OR coalesce("actor"."session"."issuer" IN ('arn:aws:iam::111122223333:role/ci-deployer', 'ecr.amazonaws.com'), false)
      OR coalesce("actor"."invoked_by" IN ('arn:aws:iam::111122223333:role/ci-deployer', 'ecr.amazonaws.com'), false)
      OR ("actor"."user"."uid" IS NULL AND "actor"."session"."issuer" IS NULL AND "actor"."invoked_by" IS NULL AND coalesce("src_endpoint"."domain" IN ('arn:aws:iam::111122223333:role/ci-deployer', 'ecr.amazonaws.com'), false)))
) AS e
GROUP BY e.k_operation, e.k_user, e.k_account, e.k_user_agent, e.k_src_ip, e.k_src_domain, e.k_region, e.k_anon
ORDER BY "lastTime" DESC
