"""The request log and the daily usage rollup move here from the routing app.

RequestLog and UsageDay were the routing app's (routing 0002 to 0011). As for
the keys (keys 0001, which says why the tables keep their names), the move is
state-only: this app takes the models over on their existing tables
(`routing_requestlog`, `routing_usageday`, kept as `db_table`), routing's 0016
drops them from its own state. The log's foreign key to its API key stays the
same column and constraint; only its target model is now `keys.ApiKey`.

The models' ContentType rows follow them (routing -> usage).
"""

import django.db.models.deletion
from django.db import migrations, models

from gateway.app_move import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("routing", "0015_model_server_provider_kind"),
        ("keys", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='UsageDay',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('day', models.DateField(help_text='UTC day.')),
                        ('key_id', models.PositiveIntegerField(default=0)),
                        ('model', models.CharField(help_text='The requested model name.', max_length=200)),
                        ('requests', models.PositiveBigIntegerField(default=0)),
                        ('errors', models.PositiveBigIntegerField(default=0)),
                        ('input_tokens', models.PositiveBigIntegerField(default=0)),
                        ('output_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cost', models.DecimalField(decimal_places=8, default=0, help_text='USD.', max_digits=16)),
                    ],
                    options={
                        'db_table': 'routing_usageday',
                        'verbose_name': 'usage per day',
                        'indexes': [models.Index(fields=['key_id', 'day'], name='usage_key_day')],
                        'constraints': [models.UniqueConstraint(fields=('day', 'key_id', 'model'), name='usage_day_key_model')],
                    },
                ),
                migrations.CreateModel(
                    name='RequestLog',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('created_at', models.DateTimeField(db_index=True, help_text='When the request arrived.')),
                        ('protocol', models.CharField(choices=[('openai', 'OpenAI'), ('anthropic', 'Anthropic')], max_length=16)),
                        ('endpoint', models.CharField(db_index=True, max_length=64)),
                        ('requested_model', models.CharField(blank=True, max_length=200)),
                        ('backend', models.CharField(blank=True, help_text='Who answered.', max_length=200)),
                        ('served_model', models.CharField(blank=True, max_length=200)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('fallbacks', models.PositiveSmallIntegerField(default=0)),
                        ('attempt_trail', models.CharField(blank=True, help_text='Each try and its outcome, as in X-Gateway-Attempts.', max_length=1000)),
                        ('stream', models.BooleanField(default=False)),
                        ('status', models.PositiveSmallIntegerField()),
                        ('error_type', models.CharField(blank=True, max_length=64)),
                        ('error_message', models.CharField(blank=True, help_text='What the caller was told (cut to 500 characters).', max_length=500)),
                        ('mapping', models.CharField(blank=True, help_text='The pattern of the mapping that routed the name (empty: served by the local model of that name, or no route), as routing stood when the row was written.', max_length=200)),
                        ('input_tokens', models.PositiveIntegerField(default=0)),
                        ('output_tokens', models.PositiveIntegerField(default=0)),
                        ('cached_tokens', models.PositiveIntegerField(default=0, help_text='Of the input tokens, those read from a prompt cache.')),
                        ('cost', models.DecimalField(decimal_places=8, default=0, help_text="USD, from the serving target's prices at the time.", max_digits=14)),
                        ('latency_ms', models.FloatField(verbose_name='latency (ms)')),
                        ('ttft_ms', models.FloatField(blank=True, null=True, verbose_name='time to first token (ms)')),
                        ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='requests', to='keys.apikey', verbose_name='API key')),
                    ],
                    options={
                        'db_table': 'routing_requestlog',
                        'verbose_name': 'request log entry',
                        'verbose_name_plural': 'request log entries',
                        'ordering': ['-created_at', '-id'],
                        'indexes': [models.Index(fields=['api_key', 'created_at'], name='requestlog_key_time'), models.Index(fields=['status', 'created_at'], name='requestlog_status_time'), models.Index(fields=['backend', 'created_at'], name='requestlog_backend_time'), models.Index(fields=['mapping', 'created_at'], name='requestlog_mapping_time')],
                    },
                ),
            ],
        ),
        move_content_types("routing", "usage", ["requestlog", "usageday"]),
    ]
