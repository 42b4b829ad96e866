/** GUID Partition Tables: reading (the agent finds its partitions) and writing (the installer). */
export {
  decodeGuid,
  encodeGuid,
  GptError,
  type GptErrorCode,
  layoutTable,
  type Partition,
  type PartitionSpec,
  type PartitionTable,
  PartitionType,
  readTable,
  SECTOR,
  writeTable,
} from './gpt.ts';
