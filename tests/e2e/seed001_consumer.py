# Seed 001's consumer, as the post shows it (Markdown escapes "\_" removed, indentation restored).
from kafka import KafkaConsumer
import json
# Kafka 소비자 설정
consumer = KafkaConsumer(
'my_topic',
bootstrap_servers='localhost:9092',
value_deserializer=lambda v: json.loads(v.decode('utf-8')),
auto_offset_reset='earliest', # 가장 처음부터 메시지를 읽음
enable_auto_commit=True
)
# 메시지 소비
for message in consumer:
    print(f"Received message: {message.value}", flush=True)
