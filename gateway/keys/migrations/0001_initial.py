"""Client API keys move here from the routing app, rows and all.

ApiKey and ApiKeyState were the routing app's (routing 0002, 0006, 0011). The
move is state-only: this app takes the models over on their existing tables
(`routing_apikey`, `routing_apikeystate`, kept as `db_table`) and routing's
0016 drops them from its own state, so no row is copied and nothing locks.

Why not rename the tables too: on PostgreSQL, Django names some indexes and
constraints after the table (the `_like` pattern indexes of unique or indexed
text columns, the foreign key constraints) and recomputes those names from the
current table name when a later migration drops them; after a rename they
would no longer match and that later migration would fail. Kept tables keep
every derived name true, on SQLite and PostgreSQL alike.

The models' ContentType rows follow them (routing -> keys), so granted
permissions and the admin's history of each key still point at it.
"""

import routing.validators
from django.db import migrations, models

from gateway.app_move import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("routing", "0015_model_server_provider_kind"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='ApiKey',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(help_text='Who or what uses this key; unique, so lists and logs name one key.', max_length=200, unique=True)),
                        ('prefix', models.CharField(editable=False, help_text="The key's first characters, to recognise it; the rest is never stored.", max_length=11)),
                        ('key_hash', models.CharField(editable=False, max_length=64, unique=True)),
                        ('enabled', models.BooleanField(default=True)),
                        ('expires_at', models.DateTimeField(blank=True, help_text='Empty: never expires.', null=True)),
                        ('allowed_models', models.JSONField(blank=True, default=list, help_text='fnmatch patterns on the requested model name; empty: every model.', validators=[routing.validators.validate_patterns])),
                        ('requests_per_minute', models.PositiveIntegerField(blank=True, help_text='Empty: unlimited.', null=True)),
                        ('tokens_per_minute', models.PositiveIntegerField(blank=True, help_text='Input and output tokens together. Empty: unlimited.', null=True)),
                        ('budget_per_day', models.DecimalField(blank=True, decimal_places=2, help_text='USD per UTC day; once spent, requests get 429 budget_exceeded. Empty: none.', max_digits=12, null=True)),
                        ('budget_per_month', models.DecimalField(blank=True, decimal_places=2, help_text='USD per calendar month (UTC). Empty: none.', max_digits=12, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('last_used_at', models.DateTimeField(blank=True, editable=False, null=True)),
                    ],
                    options={
                        'db_table': 'routing_apikey',
                        'verbose_name': 'API key',
                        'ordering': ['name', 'id'],
                    },
                ),
                migrations.CreateModel(
                    name='ApiKeyState',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('version', models.BigIntegerField(default=0)),
                    ],
                    options={
                        'db_table': 'routing_apikeystate',
                    },
                ),
            ],
        ),
        move_content_types("routing", "keys", ["apikey", "apikeystate"]),
    ]
