"""Rules the scenarios add to the gateway's config: answer every CALL (B2, B3), accept every boot
(B4, B7), and report when each charge point connected (B7)."""

# one rule that answers every CALL inside the gateway (B2, B3): Heartbeat with its currentTime (which
# the 1.6 schema requires, so B3's downstream check passes), every other action with an empty payload
ANSWER_RULE = '''
rule_engine.rules.bench_answer {
  sql = """SELECT clientid, payload.UniqueId AS id,
                  CASE payload.Action WHEN 'Heartbeat' THEN '{"currentTime":"' + now_rfc3339() + '"}'
                                      ELSE '{}' END AS body
           FROM "ocpp/cp/+" WHERE payload.MessageTypeId = 2 AND payload.Action != 'BootNotification'"""
  actions = [{function = republish, args {
    topic = "ocpp/cs/${clientid}"
    payload = """{"MessageTypeId": 3, "UniqueId": "${id}", "Payload": ${body}}"""
  }}]
}
'''


def boot_rule(interval: int) -> str:
    """docs/rules.md's auto-accept rule, with the heartbeat interval the charge points get."""
    return f'''
rule_engine.rules.bench_boot {{
  sql = """SELECT clientid, payload.UniqueId AS id, now_rfc3339() AS Payload.currentTime,
                  {int(interval)} AS Payload.interval, 'Accepted' AS Payload.status
           FROM "ocpp/cp/+" WHERE payload.Action = 'BootNotification'"""
  actions = [{{function = republish, args {{
    topic = "ocpp/cs/${{clientid}}"
    payload = """{{"MessageTypeId": 3, "UniqueId": "${{id}}", "Payload": ${{Payload}}}}"""
  }}}}]
}}
'''


CONNECTED_TOPIC = "bench/connected"
# B7: when the gateway accepted each charge point, by its own clock (ms), to `bench/connected/<cid>`
CONNECTED_RULE = f'''
rule_engine.rules.bench_connected {{
  sql = """SELECT clientid, connected_at FROM "$events/client_connected" """
  actions = [{{function = republish, args {{topic = "{CONNECTED_TOPIC}/${{clientid}}", payload = "${{connected_at}}"}}}}]
}}
'''
