"""The real servers of the edge tests (mosquitto, an asyncua OPC UA server, a pymodbus server, a silent
TCP listener): they live in `bench._edge_servers`, shared with `bench/edge.py` (bench/ and tests/ may
import anything; bench does not import tests)."""

from bench._edge_servers import (LOOPBACK, START_S, LoopThread, ModbusServer, Mosquitto, OpcUaServer, SilentServer,
                                 free_port, make_tls, mosquitto, opcua_certificate, sparkplug_payload,
                                 wait_listening)

__all__ = ["LOOPBACK", "START_S", "LoopThread", "ModbusServer", "Mosquitto", "OpcUaServer", "SilentServer", "free_port",
           "make_tls", "mosquitto", "opcua_certificate", "sparkplug_payload", "wait_listening"]
