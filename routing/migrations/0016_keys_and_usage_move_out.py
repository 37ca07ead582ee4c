"""Client keys, the request log and the usage rollup leave the routing app.

They are now the `keys` and `usage` apps' (gateway/keys, gateway/usage), whose
0001 migrations took them over on the same tables. This drops them from the
routing app's state only: the database keeps every table and row.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("routing", "0015_model_server_provider_kind"),
        ("keys", "0001_initial"),
        ("usage", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="requestlog", name="api_key"),
                migrations.DeleteModel(name="ApiKeyState"),
                migrations.DeleteModel(name="UsageDay"),
                migrations.DeleteModel(name="ApiKey"),
                migrations.DeleteModel(name="RequestLog"),
            ],
        ),
    ]
