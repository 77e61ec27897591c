"""The Sparkplug B payload classes: ``sparkplug_b.proto`` beside this file, compiled.

The file's serialized ``FileDescriptorProto`` is embedded (base64) and loaded into a private
descriptor pool, so the classes work with every protobuf runtime the project allows (no generated
``_pb2`` module and its runtime-version pin) and never clash with another copy of the schema.
Regenerate after editing the .proto (tests/edge/test_sources_sparkplug.py checks they agree)::

    python -m grpc_tools.protoc -I edge/sources --descriptor_set_out=/tmp/spb.desc sparkplug_b.proto
    python -c "import base64; from google.protobuf import descriptor_pb2 as d; \\
        print(base64.b64encode(d.FileDescriptorSet.FromString(open('/tmp/spb.desc','rb').read()).file[0].SerializeToString()).decode())"
"""

from __future__ import annotations

import base64

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["FILE_DESCRIPTOR", "Payload", "DataType"]

_SERIALIZED = base64.b64decode(
    "ChFzcGFya3BsdWdfYi5wcm90bxIZb3JnLmVjbGlwc2UudGFodS5wcm90b2J1ZiKHHAoHUGF5bG9hZBIcCgl0aW1lc3RhbXAY"
    "ASABKARSCXRpbWVzdGFtcBJDCgdtZXRyaWNzGAIgAygLMikub3JnLmVjbGlwc2UudGFodS5wcm90b2J1Zi5QYXlsb2FkLk1l"
    "dHJpY1IHbWV0cmljcxIQCgNzZXEYAyABKARSA3NlcRISCgR1dWlkGAQgASgJUgR1dWlkEhIKBGJvZHkYBSABKAxSBGJvZHka"
    "xAUKCFRlbXBsYXRlEhgKB3ZlcnNpb24YASABKAlSB3ZlcnNpb24SQwoHbWV0cmljcxgCIAMoCzIpLm9yZy5lY2xpcHNlLnRh"
    "aHUucHJvdG9idWYuUGF5bG9hZC5NZXRyaWNSB21ldHJpY3MSVQoKcGFyYW1ldGVycxgDIAMoCzI1Lm9yZy5lY2xpcHNlLnRh"
    "aHUucHJvdG9idWYuUGF5bG9hZC5UZW1wbGF0ZS5QYXJhbWV0ZXJSCnBhcmFtZXRlcnMSIQoMdGVtcGxhdGVfcmVmGAQgASgJ"
    "Ugt0ZW1wbGF0ZVJlZhIjCg1pc19kZWZpbml0aW9uGAUgASgIUgxpc0RlZmluaXRpb24arwMKCVBhcmFtZXRlchISCgRuYW1l"
    "GAEgASgJUgRuYW1lEhIKBHR5cGUYAiABKA1SBHR5cGUSHQoJaW50X3ZhbHVlGAMgASgNSABSCGludFZhbHVlEh8KCmxvbmdf"
    "dmFsdWUYBCABKARIAFIJbG9uZ1ZhbHVlEiEKC2Zsb2F0X3ZhbHVlGAUgASgCSABSCmZsb2F0VmFsdWUSIwoMZG91YmxlX3Zh"
    "bHVlGAYgASgBSABSC2RvdWJsZVZhbHVlEiUKDWJvb2xlYW5fdmFsdWUYByABKAhIAFIMYm9vbGVhblZhbHVlEiMKDHN0cmlu"
    "Z192YWx1ZRgIIAEoCUgAUgtzdHJpbmdWYWx1ZRJ4Cg9leHRlbnNpb25fdmFsdWUYCSABKAsyTS5vcmcuZWNsaXBzZS50YWh1"
    "LnByb3RvYnVmLlBheWxvYWQuVGVtcGxhdGUuUGFyYW1ldGVyLlBhcmFtZXRlclZhbHVlRXh0ZW5zaW9uSABSDmV4dGVuc2lv"
    "blZhbHVlGiMKF1BhcmFtZXRlclZhbHVlRXh0ZW5zaW9uKggIARCAgICAAkIHCgV2YWx1ZSoICAYQgICAgAIangUKB0RhdGFT"
    "ZXQSJAoObnVtX29mX2NvbHVtbnMYASABKARSDG51bU9mQ29sdW1ucxIYCgdjb2x1bW5zGAIgAygJUgdjb2x1bW5zEhQKBXR5"
    "cGVzGAMgAygNUgV0eXBlcxJCCgRyb3dzGAQgAygLMi4ub3JnLmVjbGlwc2UudGFodS5wcm90b2J1Zi5QYXlsb2FkLkRhdGFT"
    "ZXQuUm93UgRyb3dzGogDCgxEYXRhU2V0VmFsdWUSHQoJaW50X3ZhbHVlGAEgASgNSABSCGludFZhbHVlEh8KCmxvbmdfdmFs"
    "dWUYAiABKARIAFIJbG9uZ1ZhbHVlEiEKC2Zsb2F0X3ZhbHVlGAMgASgCSABSCmZsb2F0VmFsdWUSIwoMZG91YmxlX3ZhbHVl"
    "GAQgASgBSABSC2RvdWJsZVZhbHVlEiUKDWJvb2xlYW5fdmFsdWUYBSABKAhIAFIMYm9vbGVhblZhbHVlEiMKDHN0cmluZ192"
    "YWx1ZRgGIAEoCUgAUgtzdHJpbmdWYWx1ZRJ4Cg9leHRlbnNpb25fdmFsdWUYByABKAsyTS5vcmcuZWNsaXBzZS50YWh1LnBy"
    "b3RvYnVmLlBheWxvYWQuRGF0YVNldC5EYXRhU2V0VmFsdWUuRGF0YVNldFZhbHVlRXh0ZW5zaW9uSABSDmV4dGVuc2lvblZh"
    "bHVlGiEKFURhdGFTZXRWYWx1ZUV4dGVuc2lvbioICAEQgICAgAJCBwoFdmFsdWUaZAoDUm93ElMKCGVsZW1lbnRzGAEgAygL"
    "Mjcub3JnLmVjbGlwc2UudGFodS5wcm90b2J1Zi5QYXlsb2FkLkRhdGFTZXQuRGF0YVNldFZhbHVlUghlbGVtZW50cyoICAIQ"
    "gICAgAIqCAgFEICAgIACGvUECg1Qcm9wZXJ0eVZhbHVlEhIKBHR5cGUYASABKA1SBHR5cGUSFwoHaXNfbnVsbBgCIAEoCFIG"
    "aXNOdWxsEh0KCWludF92YWx1ZRgDIAEoDUgAUghpbnRWYWx1ZRIfCgpsb25nX3ZhbHVlGAQgASgESABSCWxvbmdWYWx1ZRIh"
    "CgtmbG9hdF92YWx1ZRgFIAEoAkgAUgpmbG9hdFZhbHVlEiMKDGRvdWJsZV92YWx1ZRgGIAEoAUgAUgtkb3VibGVWYWx1ZRIl"
    "Cg1ib29sZWFuX3ZhbHVlGAcgASgISABSDGJvb2xlYW5WYWx1ZRIjCgxzdHJpbmdfdmFsdWUYCCABKAlIAFILc3RyaW5nVmFs"
    "dWUSXQoRcHJvcGVydHlzZXRfdmFsdWUYCSABKAsyLi5vcmcuZWNsaXBzZS50YWh1LnByb3RvYnVmLlBheWxvYWQuUHJvcGVy"
    "dHlTZXRIAFIQcHJvcGVydHlzZXRWYWx1ZRJjChJwcm9wZXJ0eXNldHNfdmFsdWUYCiABKAsyMi5vcmcuZWNsaXBzZS50YWh1"
    "LnByb3RvYnVmLlBheWxvYWQuUHJvcGVydHlTZXRMaXN0SABSEXByb3BlcnR5c2V0c1ZhbHVlEnIKD2V4dGVuc2lvbl92YWx1"
    "ZRgLIAEoCzJHLm9yZy5lY2xpcHNlLnRhaHUucHJvdG9idWYuUGF5bG9hZC5Qcm9wZXJ0eVZhbHVlLlByb3BlcnR5VmFsdWVF"
    "eHRlbnNpb25IAFIOZXh0ZW5zaW9uVmFsdWUaIgoWUHJvcGVydHlWYWx1ZUV4dGVuc2lvbioICAEQgICAgAJCBwoFdmFsdWUa"
    "dQoLUHJvcGVydHlTZXQSEgoEa2V5cxgBIAMoCVIEa2V5cxJICgZ2YWx1ZXMYAiADKAsyMC5vcmcuZWNsaXBzZS50YWh1LnBy"
    "b3RvYnVmLlBheWxvYWQuUHJvcGVydHlWYWx1ZVIGdmFsdWVzKggIAxCAgICAAhptCg9Qcm9wZXJ0eVNldExpc3QSUAoLcHJv"
    "cGVydHlzZXQYASADKAsyLi5vcmcuZWNsaXBzZS50YWh1LnByb3RvYnVmLlBheWxvYWQuUHJvcGVydHlTZXRSC3Byb3BlcnR5"
    "c2V0KggIAhCAgICAAhrvAQoITWV0YURhdGESIgoNaXNfbXVsdGlfcGFydBgBIAEoCFILaXNNdWx0aVBhcnQSIQoMY29udGVu"
    "dF90eXBlGAIgASgJUgtjb250ZW50VHlwZRISCgRzaXplGAMgASgEUgRzaXplEhAKA3NlcRgEIAEoBFIDc2VxEhsKCWZpbGVf"
    "bmFtZRgFIAEoCVIIZmlsZU5hbWUSGwoJZmlsZV90eXBlGAYgASgJUghmaWxlVHlwZRIQCgNtZDUYByABKAlSA21kNRIgCgtk"
    "ZXNjcmlwdGlvbhgIIAEoCVILZGVzY3JpcHRpb24qCAgJEICAgIACGpwHCgZNZXRyaWMSEgoEbmFtZRgBIAEoCVIEbmFtZRIU"
    "CgVhbGlhcxgCIAEoBFIFYWxpYXMSHAoJdGltZXN0YW1wGAMgASgEUgl0aW1lc3RhbXASGgoIZGF0YXR5cGUYBCABKA1SCGRh"
    "dGF0eXBlEiMKDWlzX2hpc3RvcmljYWwYBSABKAhSDGlzSGlzdG9yaWNhbBIhCgxpc190cmFuc2llbnQYBiABKAhSC2lzVHJh"
    "bnNpZW50EhcKB2lzX251bGwYByABKAhSBmlzTnVsbBJHCghtZXRhZGF0YRgIIAEoCzIrLm9yZy5lY2xpcHNlLnRhaHUucHJv"
    "dG9idWYuUGF5bG9hZC5NZXRhRGF0YVIIbWV0YWRhdGESTgoKcHJvcGVydGllcxgJIAEoCzIuLm9yZy5lY2xpcHNlLnRhaHUu"
    "cHJvdG9idWYuUGF5bG9hZC5Qcm9wZXJ0eVNldFIKcHJvcGVydGllcxIdCglpbnRfdmFsdWUYCiABKA1IAFIIaW50VmFsdWUS"
    "HwoKbG9uZ192YWx1ZRgLIAEoBEgAUglsb25nVmFsdWUSIQoLZmxvYXRfdmFsdWUYDCABKAJIAFIKZmxvYXRWYWx1ZRIjCgxk"
    "b3VibGVfdmFsdWUYDSABKAFIAFILZG91YmxlVmFsdWUSJQoNYm9vbGVhbl92YWx1ZRgOIAEoCEgAUgxib29sZWFuVmFsdWUS"
    "IwoMc3RyaW5nX3ZhbHVlGA8gASgJSABSC3N0cmluZ1ZhbHVlEiEKC2J5dGVzX3ZhbHVlGBAgASgMSABSCmJ5dGVzVmFsdWUS"
    "UQoNZGF0YXNldF92YWx1ZRgRIAEoCzIqLm9yZy5lY2xpcHNlLnRhaHUucHJvdG9idWYuUGF5bG9hZC5EYXRhU2V0SABSDGRh"
    "dGFzZXRWYWx1ZRJUCg50ZW1wbGF0ZV92YWx1ZRgSIAEoCzIrLm9yZy5lY2xpcHNlLnRhaHUucHJvdG9idWYuUGF5bG9hZC5U"
    "ZW1wbGF0ZUgAUg10ZW1wbGF0ZVZhbHVlEmkKD2V4dGVuc2lvbl92YWx1ZRgTIAEoCzI+Lm9yZy5lY2xpcHNlLnRhaHUucHJv"
    "dG9idWYuUGF5bG9hZC5NZXRyaWMuTWV0cmljVmFsdWVFeHRlbnNpb25IAFIOZXh0ZW5zaW9uVmFsdWUaIAoUTWV0cmljVmFs"
    "dWVFeHRlbnNpb24qCAgBEICAgIACQgcKBXZhbHVlKggIBhCAgICAAiryAwoIRGF0YVR5cGUSCwoHVW5rbm93bhAAEggKBElu"
    "dDgQARIJCgVJbnQxNhACEgkKBUludDMyEAMSCQoFSW50NjQQBBIJCgVVSW50OBAFEgoKBlVJbnQxNhAGEgoKBlVJbnQzMhAH"
    "EgoKBlVJbnQ2NBAIEgkKBUZsb2F0EAkSCgoGRG91YmxlEAoSCwoHQm9vbGVhbhALEgoKBlN0cmluZxAMEgwKCERhdGVUaW1l"
    "EA0SCAoEVGV4dBAOEggKBFVVSUQQDxILCgdEYXRhU2V0EBASCQoFQnl0ZXMQERIICgRGaWxlEBISDAoIVGVtcGxhdGUQExIP"
    "CgtQcm9wZXJ0eVNldBAUEhMKD1Byb3BlcnR5U2V0TGlzdBAVEg0KCUludDhBcnJheRAWEg4KCkludDE2QXJyYXkQFxIOCgpJ"
    "bnQzMkFycmF5EBgSDgoKSW50NjRBcnJheRAZEg4KClVJbnQ4QXJyYXkQGhIPCgtVSW50MTZBcnJheRAbEg8KC1VJbnQzMkFy"
    "cmF5EBwSDwoLVUludDY0QXJyYXkQHRIOCgpGbG9hdEFycmF5EB4SDwoLRG91YmxlQXJyYXkQHxIQCgxCb29sZWFuQXJyYXkQ"
    "IBIPCgtTdHJpbmdBcnJheRAhEhEKDURhdGVUaW1lQXJyYXkQIkIsChlvcmcuZWNsaXBzZS50YWh1LnByb3RvYnVmQg9TcGFy"
    "a3BsdWdCUHJvdG8="
)

FILE_DESCRIPTOR = descriptor_pb2.FileDescriptorProto.FromString(_SERIALIZED)
_POOL = descriptor_pool.DescriptorPool()
_FILE = _POOL.AddSerializedFile(_SERIALIZED)
Payload = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload"))


class DataType:
    """The ``DataType`` enum's numbers (``Metric.datatype``)."""

    _enum = _POOL.FindEnumTypeByName("org.eclipse.tahu.protobuf.DataType")
    Int8, Int16, Int32, Int64 = 1, 2, 3, 4
    UInt8, UInt16, UInt32, UInt64 = 5, 6, 7, 8
    Float, Double, Boolean, String, DateTime, Text = 9, 10, 11, 12, 13, 14

    @classmethod
    def name(cls, number: int) -> str:
        value = cls._enum.values_by_number.get(number)
        return value.name if value is not None else f"DataType({number})"
