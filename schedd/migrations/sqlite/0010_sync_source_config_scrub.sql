-- A sync's sourceConfig (its secrets: an access token, a password) was copied into its
-- schedule's worker action and from there into each run's resolved_payload, which /v1, the
-- compatibility routers and the console show. It is now kept only in `syncs` and added to
-- the run handed to the worker that claims it; remove the copies made before.
UPDATE schedules SET action_config = json_remove(action_config, '$.payload.sourceConfig')
 WHERE action_type = 'worker' AND id IN (SELECT id FROM syncs)
   AND json_type(action_config, '$.payload.sourceConfig') IS NOT NULL;
UPDATE runs SET resolved_payload = json_remove(resolved_payload, '$.sourceConfig')
 WHERE schedule_id IN (SELECT id FROM syncs) AND resolved_payload IS NOT NULL
   AND CASE WHEN json_valid(resolved_payload)
            THEN json_type(resolved_payload, '$.sourceConfig') END IS NOT NULL;
