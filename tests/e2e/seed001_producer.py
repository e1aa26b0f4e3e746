# Seed 001's producer, as the post shows it (only the lost indentation restored).
from kafka import KafkaProducer
import json
# Kafka 프로듀서 설정
producer = KafkaProducer(
bootstrap_servers='localhost:9092',
value_serializer=lambda v: json.dumps(v).encode('utf-8')
)
# 메시지 전송
topic_name = 'my_topic'
message = {'key': 'value'}
producer.send(topic_name, message)
producer.flush() # 모든 메시지가 전송될 때까지 대기
print(f"Message sent to topic {topic_name}: {message}")
