"""The MQTT side of the gate: state, decisions and statistics to a broker, Home Assistant discovery.

A side channel beside web/: it observes the gate's LiveState and the gate never imports it; it
never subscribes to anything, so no message can move an output. paho-mqtt is imported only when
``[mqtt] enabled`` is set. The topics and payloads are documented in docs/integration.md.
"""
